def test_outputs_are_collected_redacted_and_kept_out_of_the_log(
    release: Release, tmp_path: Path
) -> None:
    token = canary("output-token")
    commands = [
        'printf "plan: 3 to add\\ntoken=%s\\n" "$TOKEN" > "$HL_OUTPUTS/plan.txt"',
        "printf '\\000\\001binary' > \"$HL_OUTPUTS/blob.bin\"",
        'head -c 2000000 /dev/zero > "$HL_OUTPUTS/too-big.bin"',  # over 1 MiB: not sent
        'ln -s /etc/passwd "$HL_OUTPUTS/link"',  # not a regular file: not sent
        'mkdir "$HL_OUTPUTS/sub" && echo x > "$HL_OUTPUTS/sub/nested.txt"',  # top level only
        "echo run-output-done",
    ]
    document = spec_of(busybox_image(), ("main", commands), secret_env={"TOKEN": token})
    log = tmp_path / "run.log"
    audit = MemoryAuditLog()
    result = execute(document, settings_for(tmp_path), release, log, audit=audit)
    text = log.read_text()
    assert result.succeeded, text
    assert set(result.outputs) == {"plan.txt", "blob.bin"}
    assert result.outputs["plan.txt"] == b"plan: 3 to add\ntoken=***\n"
    assert result.outputs["blob.bin"] == b"\x00\x01binary"
    assert "::hl:: output" not in text
    assert "run-output-done" in text
    assert token not in text
    assert text.rstrip().endswith("::hl:: run end status=0")
    assert [e.type for e in audit.events if e.type.startswith("run.log")] == ["run.log_clean"]
