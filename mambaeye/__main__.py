from mambaeye.cli import main

raise SystemExit(main())
