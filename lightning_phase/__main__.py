from lightning_phase.cli import main

raise SystemExit(main())
