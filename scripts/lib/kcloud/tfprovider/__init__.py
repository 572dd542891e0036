"""The kcloud terraform provider: `kcloud_ssh_key` and `kcloud_instance` on the `tf` framework.

provider.py    the resources (thin: every API call goes through kcloud.providers and
               kcloud.launch.failover, so terraform and the CLI share one code path)
__main__.py    the plugin entry point (`python -m kcloud.tfprovider`, run by terraform)
install.py     project-local plugin directory + CLI configuration + terraform binary choice
tfvars.py      terraform.tfvars rendering (Jinja2, no secrets)
runner.py      `Terraform(root)`: init/apply/destroy/output with streaming and Ctrl-C handling
"""

HOST, NAMESPACE, TYPE, VERSION = "registry.terraform.io", "kcloud", "kcloud", "0.1.0"
SOURCE = f"{HOST}/{NAMESPACE}/{TYPE}"
