"""Entry point: ``python -m car_damage.deploy ...``."""

from car_damage.deploy.cli import main

raise SystemExit(main())
