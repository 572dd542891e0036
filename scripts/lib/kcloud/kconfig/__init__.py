"""Kconfig for kcloud: rendered provider fragments, kconfiglib targets, and .config reading.

paths     where fragments live and which set (default/generated) Kconfig sources
generate  render fragments from a Catalog + provider data (Jinja2), cloud-config refresh
kbuild    defconfig / olddefconfig / savedefconfig / menuconfig on kconfiglib (no network)
config    .config -> Settings for bringup; extra_vars.yaml
commands  the CLI subcommands
"""
