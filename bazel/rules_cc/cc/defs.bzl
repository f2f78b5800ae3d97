"""Offline stand-in for @rules_cc//cc:defs.bzl.

Debian's Bazel 4.2.3 loads @rules_cc from @bazel_tools//tools/cpp. The real rules_cc
would be downloaded, and Debian's bazel-rules-cc package is too new for Bazel 4.2.3,
so this file simply re-exports the rules that are built into Bazel.
"""

cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
fdo_prefetch_hints = native.fdo_prefetch_hints
fdo_profile = native.fdo_profile
objc_import = native.objc_import
objc_library = native.objc_library
