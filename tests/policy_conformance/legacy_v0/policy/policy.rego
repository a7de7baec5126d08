package spacelift

deny["Do not run as root"] { input.static_run_environment.command == "sudo" }

deny[sprintf("stack %s is frozen", [input.static_run_environment.stack_slug])] {
  input.static_run_environment.stack_labels[_] == "frozen"
}

sample { input.run.type == "TRACKED" }
