"""The replay tests of the fuzz targets."""

def fuzz_replay_tests(targets):
    """Declares NAME_replay_test for every fuzz target NAME.

    It builds tests/fuzz/NAME_fuzz.cc with replay_main.cc (no libFuzzer) and
    runs it over corpus/NAME and regressions/NAME (either may be absent, not
    both).

    Args:
      targets: a dict from target name to the extra deps its source needs.
    """
    for name, deps in targets.items():
        native.cc_test(
            name = name + "_replay_test",
            srcs = [name + "_fuzz.cc"],
            deps = [":fuzz_support", ":replay_main", "//fusexx"] + deps,
            data = native.glob(["corpus/%s/**" % name, "regressions/%s/**" % name]),
            args = ["tests/fuzz/corpus/" + name, "tests/fuzz/regressions/" + name],
            size = "small",
        )
