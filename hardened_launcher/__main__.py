from hardened_launcher.cli import main

raise SystemExit(main())
