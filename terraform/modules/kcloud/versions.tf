# The kcloud provider is installed project-locally (terraform/.plugins, see
# scripts/lib/kcloud/tfprovider/install.py); terraform never fetches it from a registry.
terraform {
  required_version = ">= 1.0"
  required_providers {
    kcloud = {
      source  = "registry.terraform.io/kcloud/kcloud"
      version = "0.1.0"
    }
  }
}
