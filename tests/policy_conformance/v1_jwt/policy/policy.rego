package spacelift

import rego.v1

# io.jwt.decode_verify / io.jwt.decode are launcher builtins (regorus 0.13.0 has none).
secret := "conformance-secret-0123456789abcdef"

ed_key := `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA4znJAaY5nI05DecNyXn5DG0ssM0FMbocMv1cM6tN4Sc=
-----END PUBLIC KEY-----
`

now := 1704067260 * 1000000000

verified(token) := claims if {
	[valid, _, claims] := io.jwt.decode_verify(token, {"secret": secret, "iss": "ci", "aud": "launcher", "time": now})
	valid
}

verified(token) := claims if {
	[valid, _, claims] := io.jwt.decode_verify(token, {"cert": ed_key, "alg": "EdDSA", "iss": "ci", "aud": "launcher", "time": now})
	valid
}

deny contains "token does not verify" if not verified(input.run.user_provided_metadata[0])

deny contains sprintf("token for %s", [claims.sub]) if {
	claims := verified(input.run.user_provided_metadata[0])
	claims.sub != "deploy"
}

deny contains sprintf("unverified alg %s", [io.jwt.decode(input.run.user_provided_metadata[1])[0].alg]) if {
	count(input.run.user_provided_metadata) > 1
}

deny contains "unreachable" if {
	input.run.type == "BAD_CONSTRAINTS"
	io.jwt.decode_verify(input.run.user_provided_metadata[0], {"cert": "not a key"})[0]
}
