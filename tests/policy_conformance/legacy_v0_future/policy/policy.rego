package spacelift

import future.keywords.in
import future.keywords.if
import future.keywords.contains

deny contains msg if {
  some label in input.static_run_environment.stack_labels
  startswith(label, "deny:")
  msg := trim_prefix(label, "deny:")
}
