// doctest's main() for every test in //tests (see tests/BUILD.bazel).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
