"""header_tree: works around a Bazel < 7.7 bug so <fusexx/...> resolves in this workspace.

fusexx's headers live at fusexx/*.hpp and are included as <fusexx/*.hpp>, i.e. by their
repository-relative path. cc_library's include_prefix/strip_include_prefix cannot express
that here: when the include path equals the header's exec path (true in the main
workspace, not in an external one) Bazel 4.2.3 creates no _virtual_includes symlinks but
still only adds the empty _virtual_includes directory with -I, so angle-bracket includes
fail (bazelbuild/bazel#26537). `includes = [".."]` is rejected ("resolves to the
workspace root").

This rule mirrors the headers as symlinks under <package>/<prefix>/ in the output tree;
a cc_library over those with strip_include_prefix = <prefix> then gets a real -I
directory in every workspace, and headers keep -I (not -isystem) so their warnings show.
"""

def _header_tree_impl(ctx):
    outs = []
    pkg = ctx.label.package
    for f in ctx.files.srcs:
        # Path of the header relative to the repository root (same in every workspace).
        rel = f.short_path
        if rel.startswith("../"):  # header from an external repository: ../<repo>/<path>
            rel = rel.split("/", 2)[2]
        if pkg and rel.startswith(pkg + "/"):
            rel = rel[len(pkg) + 1:]
        out = ctx.actions.declare_file(ctx.attr.prefix + "/" + ctx.attr.include_dir + "/" + rel)
        ctx.actions.symlink(output = out, target_file = f)
        outs.append(out)
    return [DefaultInfo(files = depset(outs))]

header_tree = rule(
    implementation = _header_tree_impl,
    doc = "Symlinks `srcs` (package-relative) to <prefix>/<include_dir>/<path> in bin.",
    attrs = {
        "srcs": attr.label_list(allow_files = True, mandatory = True),
        "prefix": attr.string(default = "_include"),
        "include_dir": attr.string(mandatory = True),
    },
)
