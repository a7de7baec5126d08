# Tracked runs (the ones that apply changes) must come from a protected branch.
#   data.launcher_policy.protected_branches: ["main", "release/*"] (glob patterns, "/" separated)
package spacelift

import rego.v1

# data.launcher_policy, or {} without one. (Reading all of `data` from a rule, as in
# object.get(data, ["launcher_policy", ...]), is recursion to OPA: it includes the rule itself.)
protected_branch_settings := {k: v | some k, v in data.launcher_policy}

protected_branch_denials contains msg if {
	input.run.type == "TRACKED"
	branch := object.get(input.run, ["commit", "branch"], "")
	not branch_is_protected(branch)
	msg := sprintf("tracked runs must come from a protected branch, not %q", [branch])
}

branch_is_protected(branch) if {
	some pattern in object.get(protected_branch_settings, ["protected_branches"], [])
	glob.match(pattern, ["/"], branch)
}

deny contains msg if some msg in protected_branch_denials
