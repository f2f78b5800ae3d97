"""Helpers for fusexx's tests."""

def fusexx_tests(srcs, data = [], deps = [], size = "medium", tags = [], no_sandbox = [], per_transport = [], exclusive = []):
    """Declares one cc_test per source file `NAME_test.cc`, named `NAME_test`.

    Each test links //fusexx and doctest's main, and carries `data` in its runfiles.
    For every label in `data` that names an example binary, the environment variable
    FUSEXX_<NAME> (upper case, '-' as '_') holds its runfiles path, e.g. FUSEXX_HELLO,
    FUSEXX_FUSEXX_CTL.

    Args:
      srcs: the test sources, one test per file.
      data: runfiles every test gets (e.g. ["//examples:hello"]).
      deps: extra deps for every test.
      size: Bazel test size (the timeout comes from .bazelrc's --test_timeout).
      tags: tags for every test.
      no_sandbox: names of tests (e.g. "hello_mount_test") that get the tag
        "no-sandbox": only for tests that need uids other than root (see
        tests/BUILD.bazel for why the sandbox cannot give them).
      per_transport: names of tests that run once per transport: NAME with
        FUSEXX_TRANSPORT=classic and NAME_uring with FUSEXX_TRANSPORT=uring
        (which fails, rather than skips, where io_uring is unavailable).
      exclusive: names of tests that must run alone (they change machine-wide
        settings such as the enable_uring module parameter).
    """
    env = {}
    for label in data:
        name = label.split(":")[-1] if ":" in label else label.split("/")[-1]
        env["FUSEXX_" + name.upper().replace("-", "_")] = "$(rootpath %s)" % label

    for name in no_sandbox:
        if name + ".cc" not in srcs:
            fail("NO_SANDBOX in tests/BUILD.bazel names %s, but there is no tests/%s.cc: remove it there" % (name, name))

    for src in srcs:
        name = src[:-len(".cc")]
        test_tags = tags + (["no-sandbox"] if name in no_sandbox else []) + (["exclusive"] if name in exclusive else [])
        test_deps = ["//fusexx", "//tests:doctest_main"] + deps
        if name not in per_transport:
            native.cc_test(
                name = name,
                srcs = [src],
                deps = test_deps,
                data = data,
                env = env,
                size = size,
                tags = test_tags,
            )
            continue

        # Both transports' tests link one compiled copy of the source: two
        # cc_tests with the same srcs would compile it twice (objects are per
        # target), and these are the heaviest sources the suite has.
        native.cc_library(
            name = name + "_lib",
            testonly = True,
            srcs = [src],
            deps = test_deps,
            alwayslink = True,
        )
        for test_name, transport in [(name, "classic"), (name + "_uring", "uring")]:
            test_env = dict(env)
            test_env["FUSEXX_TRANSPORT"] = transport
            native.cc_test(
                name = test_name,
                deps = [":" + name + "_lib"],
                data = data,
                env = test_env,
                size = size,
                tags = test_tags,
            )
