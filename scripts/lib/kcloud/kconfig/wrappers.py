"""The per-provider Kconfig files that are not fragments, derived from the provider's data file.

    terraform/<p>/kconfigs/Kconfig.provider   the provider's member of the "Cloud provider" choice
    terraform/<p>/kconfigs/Kconfig            its menu: login user, the three fragments
                                              (Kconfig.{location,compute,images}.$(KCLOUD_<P>_FRAGMENTS)),
                                              the SSH key strategy and key name, kdevops' extras
    terraform/<p>/kconfigs/defconfig          `make defconfig-<p>` when defconfigs/<p> does not
                                              exist: the provider with its defaults

A provider is a module and a data file (providers/<p>.py, data/<p>.yaml): these files are
rendered from `title`, `login_user`, `credentials` and the `kconfig:` section of the data file,
git-ignored, and written by `ensure()` whenever one is missing or differs (every Kconfig
target calls it before kconfiglib parses the tree; it costs a few file reads). The `.default`
fragments a new provider lacks are rendered from its offline snapshot the same way (that one
needs Jinja2, imported only then).

What differs between providers is data (`kconfig:` in data/<p>.yaml), with kdevops' symbols:
  menus: [location, compute, images]   the order of the three submenus
  ssh_key_custom: {symbol, prompt, name_prompt}
                                       the second SSH key strategy (Lambda: SHARED, DataCrunch:
                                       MANUAL, the default) and its prompts
  extras: [...]                        kdevops symbols only some providers have, from EXTRAS

Only `os` is imported here: this runs on every Kconfig target (issue 7 keeps them cheap).
"""
from __future__ import annotations

import os

from kcloud import providers
from kcloud.errors import ConfigError

MENUS = ("location", "compute", "images")
WRAPPERS = ("Kconfig.provider", "Kconfig", "defconfig")
HEADER = ("# Rendered by kcloud (kcloud.kconfig.wrappers) from scripts/lib/kcloud/data/{p}.yaml; "
          "do not edit:\n# change the data file (every Kconfig target renders this file again).\n")

# Lambda's region selection method (kdevops' Kconfig.location), shown in the location menu
# before the region choice, which depends on the manual method.
_REGION_METHODS = """\
choice
	prompt "Region selection method"
	default {P}_REGION_SMART_INFER if !{P}_SMART_CHEAPEST
	default {P}_REGION_SMART_CHEAPEST

config {P}_REGION_SMART_CHEAPEST
	bool "Smart: the cheapest GPU with capacity, in the closest region"
	help
	  At bringup kcloud reads capacity again and launches the instance
	  type chosen under Compute - by default the cheapest GPU type with
	  capacity - in the region closest to you that has capacity. Your
	  location is inferred offline (KCLOUD_LOCATION=<lat,lon or region>,
	  else the system time zone); no geo-IP service is asked.

config {P}_REGION_SMART_INFER
	bool "Smart: the instance type you choose, in the closest region"
	help
	  You choose the instance type (or tier group) under Compute; at
	  bringup kcloud launches it in the region closest to you that has
	  capacity (see the first option for how "closest" is found).

config {P}_REGION_MANUAL
	bool "Manual: the region you choose below"
	help
	  Launch only in the region chosen below. When it has no capacity,
	  bringup fails and names the regions that do.

endchoice

"""

# kdevops symbols some providers have; `kconfig.extras` in the data file names them.
EXTRAS = {
    # inside "Identity & Access", after the key name symbols
    "ssh_key_file": ("identity", """\

config {P}_SSH_KEY_FILE
	string "Private key file"
	default "~/.ssh/kdevops_terraform_$(KCLOUD_TOPDIR_SHA8)"
	help
	  The private half of TERRAFORM_SSH_CONFIG_PUBKEY_FILE (which is
	  this path plus .pub by default).
"""),
    # after the submenus, in the provider's menu
    "smart_cheapest": ("menu", """\

config {P}_SMART_CHEAPEST
	bool "Let kcloud choose by default (smart cheapest)"
	default y
	help
	  kdevops' Kconfig.smart switch (its defconfigs set it, but kdevops
	  never reads that file). y: the region selection method defaults to
	  "Smart: the cheapest GPU with capacity"; n: it defaults to "Smart:
	  the instance type you choose". A method set explicitly wins.
"""),
    "keep_volumes": ("menu", """\

config {P}_KEEP_VOLUMES
	bool "Keep the OS volumes across destroy and bringup"
	default y if "$(KEEP)" != ""
	default n
	help
	  Keep each machine's OS-NVMe volume when it is destroyed, and
	  remember its id per host name (~/.cache/kdevops/{p}/
	  <KDEVOPS_HOSTS_PREFIX>.yml). `make defconfig-<name> KEEP=1` turns
	  this on, as in kdevops.
"""),
    "filesystem": ("menu", """\

config {P}_FILESYSTEM
	string "Shared file system (name; empty: none)"
	default ""
	help
	  A file system of this name is reused, or created, and mounted on
	  every node at launch. It pins the region: candidates elsewhere
	  are dropped. make destroy keeps it (it holds data; it is billed
	  while it exists); make destroy-storage removes it after showing
	  its size and monthly cost. make status lists it.
"""),
    "shared_volume": ("menu", """\

config {P}_SHARED_VOLUME_SIZE
	int "Shared data volume attached to every node (GB; 0: none)"
	default 0
	help
	  A shared (NVMe_Shared) volume created for this directory in the
	  location of the nodes and attached to each of them. It pins the
	  location once it exists. make destroy keeps it; make
	  destroy-storage removes it for good after showing its size and
	  monthly cost.
"""),
    "api_key_file": ("menu", """\

config {P}_API_KEY_FILE
	string "Credentials file"
	default "{credentials_file}"
	help
	  INI file whose [default] section holds {credential_keys}.
	  Mode 0600.
"""),
    "region_methods": ("location", _REGION_METHODS),
}


def _kstr(text: str) -> str:
    """A Kconfig "..." string: escaped, one line, never a $(...) call."""
    text = " ".join(str(text).split())
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$(", "$ (")


def render(provider: str) -> dict[str, str]:
    """{file name: text} of the provider's wrappers, from its data file."""
    providers.check_name(provider)
    d = providers.data(provider)
    k = d.get("kconfig") or {}
    P, title = f"TERRAFORM_{provider.upper()}", _kstr(d.get("title") or provider)
    extras = list(k.get("extras") or ())
    unknown = [e for e in extras if e not in EXTRAS] + [m for m in k.get("menus") or () if m not in MENUS]
    if unknown:
        raise ConfigError(f"data/{provider}.yaml: kconfig names unknown extras or menus: {', '.join(unknown)}",
                          hint=f"extras: {', '.join(EXTRAS)}; menus: {', '.join(MENUS)}")
    creds = d.get("credentials") or {}
    fields = creds.get("fields") or {}
    values = {"P": P, "p": provider, "title": title,
              "credentials_file": _kstr(f"{creds.get('directory', '~/.' + provider)}/credentials"),
              "credential_keys": " and ".join(names[0] for names in fields.values()) or "the API key"}

    def extra(where: str) -> str:
        return "".join(EXTRAS[e][1].format(**values) for e in extras if EXTRAS[e][0] == where)

    custom = {"symbol": "MANUAL", "prompt": "A key name you choose",
              "name_prompt": f"SSH key name in the {d.get('title') or provider} account"}
    custom.update(k.get("ssh_key_custom") or {})
    alt = f"{P}_SSH_KEY_{custom['symbol']}"
    menu_titles = {"location": "Resource location", "compute": "Compute", "images": "OS image"}
    menus = []
    for kind in k.get("menus") or MENUS:
        source = f'source "terraform/{provider}/kconfigs/Kconfig.{kind}.$(KCLOUD_{provider.upper()}_FRAGMENTS)"\n'
        if kind == "location" and extra("location"):
            menus.append(f'menu "{menu_titles[kind]}"\n\n{extra("location")}{source}\nendmenu\n')
        else:
            menus.append(f'menu "{menu_titles[kind]}"\n{source}endmenu\n')
    login_user = _kstr(d.get("login_user") or "root")

    kconfig = f"""\
{HEADER.format(p=provider)}#
# {d.get('title') or provider}: the login user, the three fragments (Kconfig.*.default from the
# shipped offline snapshot, Kconfig.*.generated from `make cloud-config`; KCLOUD_{provider.upper()}_FRAGMENTS
# picks one set), the SSH key. Symbol names and meanings are kdevops'.

if {P}

# The provider's login user: the default of TERRAFORM_SSH_CONFIG_USER (kconfigs/Kconfig.ssh).
config TERRAFORM_SSH_CONFIG_USER
	string
	default "{login_user}"

menu "{title}"

{chr(10).join(menus)}
menu "Identity & Access"

choice
	prompt "SSH key strategy"
	default {P}_SSH_KEY_UNIQUE

config {P}_SSH_KEY_UNIQUE
	bool "A unique key for this directory (recommended)"
	help
	  The key is named after this directory and its kcloud identity
	  ({P}_SSH_KEY_NAME in .config; scripts/{provider}_ssh_key_name.py
	  prints it), uploaded at bringup and removed at destroy.

config {alt}
	bool "{_kstr(custom['prompt'])}"

endchoice

config {P}_SSH_KEY_NAME_CUSTOM
	string "{_kstr(custom['name_prompt'])}"
	depends on {alt}
	default "kdevops-{provider}"

# The name bringup uses: computed, so `grep {P}_SSH_KEY_NAME .config` shows it.
config {P}_SSH_KEY_NAME
	string
	default "$(KCLOUD_{provider.upper()}_SSH_KEY_NAME)" if {P}_SSH_KEY_UNIQUE
	default {P}_SSH_KEY_NAME_CUSTOM if {alt}

config {P}_SSH_KEY_AUTO_CREATE
	bool "Upload the key at bringup and delete it from the account at destroy"
	default y if {P}_SSH_KEY_UNIQUE
	default n
	help
	  With n, bringup fails when the key is not in the account already,
	  and destroy leaves it there.
{extra("identity")}
endmenu
{extra("menu")}
endmenu

endif # {P}
"""
    provider_choice = f"{HEADER.format(p=provider)}config {P}\n\tbool \"{title}\"\n"
    defconfig = (f"# {d.get('title') or provider}: the provider's defaults (rendered by kcloud: no "
                 f"defconfigs/{provider} exists)\nCONFIG_TERRAFORM=y\nCONFIG_{P}=y\n")
    return {"Kconfig.provider": provider_choice, "Kconfig": kconfig, "defconfig": defconfig}


def wrapper_file(tree, provider: str, name: str) -> str:
    return os.path.join(os.fspath(tree), "terraform", provider, "kconfigs", name)


def defconfig_file(tree, provider: str) -> str:
    """The rendered `make defconfig-<provider>` (ensure() keeps it current)."""
    return wrapper_file(tree, provider, "defconfig")


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(3).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _same(path: str, text: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read() == text
    except (OSError, UnicodeDecodeError):
        return False


def ensure(tree, names: list[str] | None = None) -> list[str]:
    """Write every provider's wrappers (and `.default` fragments) that are missing or stale.
    Returns the paths written. A tree kcloud cannot write to gets one clear error."""
    written = []
    for provider in names if names is not None else providers.names():
        try:
            for name, text in render(provider).items():
                path = wrapper_file(tree, provider, name)
                if not _same(path, text):
                    _write(path, text)
                    written.append(path)
            from kcloud.kconfig import paths
            if not all(os.path.isfile(wrapper_file(tree, provider, f"Kconfig.{kind}.{paths.DEFAULT}"))
                       for kind in paths.KINDS):
                from kcloud.kconfig import generate    # Jinja2: only for a provider without its defaults
                written += [os.fspath(p) for p in generate.regenerate_defaults(tree, [provider])]
        except OSError as exc:
            raise ConfigError(f"cannot write {provider}'s Kconfig files in {wrapper_file(tree, provider, '')}: "
                              f"{exc.strerror or exc}",
                              hint=f"they are rendered from scripts/lib/kcloud/data/{provider}.yaml; "
                                   "make that directory writable") from None
        except ConfigError:
            raise
        except Exception as exc:   # a data file missing what the wrappers need: name it
            raise ConfigError(f"cannot render {provider}'s Kconfig from scripts/lib/kcloud/data/{provider}.yaml: "
                              f"{type(exc).__name__}: {exc}",
                              hint="see data/lambdalabs.yaml for the keys a provider's data file has") from None
    return written
