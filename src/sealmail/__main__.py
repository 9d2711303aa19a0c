from sealmail.cli.main import main

raise SystemExit(main())
