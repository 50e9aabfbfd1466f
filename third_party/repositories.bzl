"""Repositories a workspace embedding livemig must declare (Bazel 4.2.3, offline).

A VMM's WORKSPACE:

    local_repository(name = "livemig", path = "/path/to/livemig")
    load("@livemig//third_party:repositories.bzl", "livemig_dependencies")
    livemig_dependencies()

Bazel 4.2.3 would download rules_cc, rules_java and remote_coverage_tools;
livemig builds offline by pointing them at local copies, and so must every
workspace that builds livemig's targets (an external repository's WORKSPACE is
never read). The rules_cc and remote_coverage_tools shims live in this
repository (third_party/); this macro links them in from wherever @livemig was
fetched, so the consumer needs no path to them. A repository the consumer
declared before calling this macro is left alone.
"""

def _livemig_shim_impl(rctx):
    # The shim's files, linked (not copied) so third_party/ stays the one copy.
    # Found from this file's own path: a label into the shim's directory does
    # not resolve (Bazel 4.2.3: "Package is considered deleted"), that
    # directory being a repository of its own.
    root = rctx.path(Label("//third_party:repositories.bzl")).dirname.dirname
    for path in rctx.attr.files:
        rctx.symlink(rctx.path("%s/%s/%s" % (root, rctx.attr.shim_dir, path)), path)

# A repository made of the files of one of livemig's in-tree shims.
_livemig_shim = repository_rule(
    implementation = _livemig_shim_impl,
    attrs = {
        "shim_dir": attr.string(mandatory = True),
        "files": attr.string_list(mandatory = True),
    },
    local = True,
)

def livemig_dependencies():
    """Declares rules_cc, rules_java and remote_coverage_tools, all local."""
    existing = native.existing_rules()
    if "rules_cc" not in existing:
        _livemig_shim(
            name = "rules_cc",
            shim_dir = "third_party/rules_cc",
            files = ["WORKSPACE", "BUILD", "cc/BUILD", "cc/defs.bzl"],
        )
    if "rules_java" not in existing:
        # Debian's bazel-rules-java package.
        native.local_repository(
            name = "rules_java",
            path = "/usr/share/bazel/rules/java",
        )
    if "remote_coverage_tools" not in existing:
        _livemig_shim(
            name = "remote_coverage_tools",
            shim_dir = "third_party/remote_coverage_tools",
            files = ["WORKSPACE", "BUILD"],
        )
