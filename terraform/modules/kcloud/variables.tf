# Inputs of one kcloud machine. Every value comes from terraform.tfvars, rendered by
# `make bringup` from .config and the launch-time plan; none of them is a secret.

variable "name" {
  description = "Instance name, unique per project (<KDEVOPS_HOSTS_PREFIX>-<host>); an instance already named so is adopted"
  type        = string
}

variable "candidates" {
  description = "Ordered (instance_type, region) pairs; create fails over along this list"
  type = list(object({
    instance_type = string
    region        = string
  }))
}

variable "ssh_key_name" {
  description = "Name of the SSH key in the cloud"
  type        = string
}

variable "ssh_public_key" {
  description = "OpenSSH public key text; registers a new key named ssh_key_name (unused when ssh_key_id is set)"
  type        = string
  default     = ""
}

variable "ssh_key_id" {
  description = "Id of a key already registered in the cloud (shared key mode); \"\" = register ssh_public_key"
  type        = string
  default     = ""
}

variable "image" {
  description = "Image id or family; \"\" = the cloud's default"
  type        = string
  default     = ""
}

variable "user_data" {
  description = "cloud-init user data"
  type        = string
  default     = ""
  sensitive   = true
}

variable "boot_timeout" {
  description = "Seconds to wait for a launched instance to become active before trying the next candidate"
  type        = number
  default     = 600
}

variable "poll_interval" {
  description = "Seconds between status polls while booting"
  type        = number
  default     = 5
}

variable "owner" {
  description = "This directory's kcloud id: every instance is tagged kcloud-project=<owner> (an ownership proof)"
  type        = string
  default     = ""
}

variable "nodes" {
  description = "Machines of one type in one region, all or nothing (names <name>-01 ... when more than one)"
  type        = number
  default     = 1
}

variable "shared_storage" {
  description = "Shared file systems (Lambda: names) or volumes (DataCrunch: ids) attached at launch on every node"
  type        = list(string)
  default     = []
}

variable "startup_script_id" {
  description = "A startup script the cloud keeps (DataCrunch /scripts); \"\" = none or user_data"
  type        = string
  default     = ""
}

variable "boot_volumes" {
  description = "Node name -> kept OS volume id to boot from (DataCrunch KEEP_VOLUMES)"
  type        = map(string)
  default     = {}
}

variable "keep_boot_volumes" {
  description = "Keep each node's OS volume when it is destroyed (DataCrunch KEEP_VOLUMES)"
  type        = bool
  default     = false
}
