// hello: mounts the read-only tree of hello_fs.hpp.
//
//   bazel run //examples:hello -- -f /some/dir
#include "examples/hello_fs.hpp"

int main(int argc, char** argv) { return fusexx::main<hello_fs>(argc, argv); }
