package spacelift

import rego.v1

deny contains "image must be pinned by digest" if not regex.match(`@sha256:[0-9a-f]{64}$`, input.docker_image)

deny contains "repository path outside the allowed tree" if not glob.match("github.com/acme/*", ["/"], input.static_run_environment.repository_path)

deny contains "worker address not in the allowed network" if {
	not net.cidr_contains("10.0.0.0/8", object.get(input, ["launcher", "metadata", "address"], "0.0.0.0"))
}

deny contains msg if {
	not startswith(input.worker_version, "v1.")
	msg := sprintf("worker version %v is not supported", [input.worker_version])
}
