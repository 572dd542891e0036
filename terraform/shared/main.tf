# The body every provider root shares (terraform/<provider>/main.tf is a symlink to this
# file): the root's own inputs and one call of the shared module. The only per-provider
# file is terraform/<provider>/provider.tf.

terraform {
  required_version = ">= 1.0"
  required_providers {
    kcloud = {
      source  = "registry.terraform.io/kcloud/kcloud"
      version = "0.1.0"
    }
  }
}

variable "journal_path" {
  description = "Journal of remote side effects (kcloud reconciles it on destroy)"
  type        = string
  default     = ""
}

variable "progress_file" {
  description = "The provider appends one line per launch event here (make bringup tails it)"
  type        = string
  default     = ""
}

module "kcloud" {
  source = "../modules/kcloud"

  name           = var.name
  candidates     = var.candidates
  ssh_key_name   = var.ssh_key_name
  ssh_public_key = var.ssh_public_key
  ssh_key_id     = var.ssh_key_id
  image          = var.image
  owner          = var.owner
  user_data      = var.user_data
  boot_timeout   = var.boot_timeout
  poll_interval  = var.poll_interval

  nodes             = var.nodes
  shared_storage    = var.shared_storage
  startup_script_id = var.startup_script_id
  boot_volumes      = var.boot_volumes
  keep_boot_volumes = var.keep_boot_volumes
}
