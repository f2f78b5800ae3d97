"""Offline stand-in for @rules_java//java:defs.bzl.

@bazel_tools//tools/jdk loads @rules_java, which Bazel 4.2.3 would otherwise download.
This file re-exports the Java rules that are built into Bazel.
"""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_lite_proto_library = native.java_lite_proto_library
java_plugin = native.java_plugin
java_proto_library = native.java_proto_library
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
