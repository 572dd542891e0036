# One machine on any cloud kcloud supports: the provider block (which cloud) is the root's.

locals {
  create_ssh_key = var.ssh_key_id == ""
}

resource "kcloud_ssh_key" "this" {
  count      = local.create_ssh_key ? 1 : 0
  name       = var.ssh_key_name
  public_key = var.ssh_public_key
}

resource "kcloud_instance" "this" {
  name          = var.name
  candidates    = var.candidates
  ssh_key_id    = local.create_ssh_key ? kcloud_ssh_key.this[0].id : var.ssh_key_id
  ssh_key_name  = local.create_ssh_key ? kcloud_ssh_key.this[0].name : var.ssh_key_name
  image         = var.image
  owner         = var.owner
  user_data     = var.user_data
  boot_timeout  = var.boot_timeout
  poll_interval = var.poll_interval

  nodes             = var.nodes
  shared_storage    = var.shared_storage
  startup_script_id = var.startup_script_id
  boot_volumes      = var.boot_volumes
  keep_boot_volumes = var.keep_boot_volumes
}
