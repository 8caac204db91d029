"""Re-exports Bazel 4's native C++ and Objective-C rules as @rules_cc//cc:defs.bzl.

Bazel 4.2.3 (Debian's bazel-bootstrap) loads these names from @rules_cc in its
embedded tools even for a Python-only build. The real rules_cc would be
fetched from the network, and Debian's packaged rules_cc is too new for
Bazel 4, so this offline stand-in forwards each rule to its native version,
which is what rules_cc itself did for Bazel 4.
"""

def cc_library(**attrs):
    """Forwards to native.cc_library."""
    native.cc_library(**attrs)

def cc_binary(**attrs):
    """Forwards to native.cc_binary."""
    native.cc_binary(**attrs)

def cc_test(**attrs):
    """Forwards to native.cc_test."""
    native.cc_test(**attrs)

def cc_toolchain(**attrs):
    """Forwards to native.cc_toolchain."""
    native.cc_toolchain(**attrs)

def cc_toolchain_suite(**attrs):
    """Forwards to native.cc_toolchain_suite."""
    native.cc_toolchain_suite(**attrs)

def cc_import(**attrs):
    """Forwards to native.cc_import."""
    native.cc_import(**attrs)

def cc_proto_library(**attrs):
    """Forwards to native.cc_proto_library."""
    native.cc_proto_library(**attrs)

def objc_library(**attrs):
    """Forwards to native.objc_library."""
    native.objc_library(**attrs)

def objc_import(**attrs):
    """Forwards to native.objc_import."""
    native.objc_import(**attrs)

def fdo_profile(**attrs):
    """Forwards to native.fdo_profile."""
    native.fdo_profile(**attrs)

def fdo_prefetch_hints(**attrs):
    """Forwards to native.fdo_prefetch_hints."""
    native.fdo_prefetch_hints(**attrs)
