"""The launch walk: failover, journal and ownership. Core, beneath both `bringup/` (the CLI)
and `tfprovider/` (terraform's create); it imports neither of them."""
