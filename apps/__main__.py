from vqkeras.apps.cli import main

raise SystemExit(main())
