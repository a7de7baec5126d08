package spacelift

deny contains "tracked runs need a commit" if {
	input.run.type == "TRACKED"
	not input.run.commit.hash
}

deny contains sprintf("author %s is not allowed", [input.run.commit.author]) if {
	input.run.commit.author in {"mallory", "eve"}
}

sample := true if input.run.triggered_by == "audit"
