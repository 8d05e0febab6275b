from resnet_api.cli import main

raise SystemExit(main())
