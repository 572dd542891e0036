# terraform/<provider>/output.tf is a symlink to this file.

output "id" {
  value = module.kcloud.id
}

output "name" {
  value = module.kcloud.name
}

output "ip" {
  value = module.kcloud.ip
}

output "instance_type" {
  value = module.kcloud.instance_type
}

output "region" {
  value = module.kcloud.region
}

output "price" {
  description = "USD per hour"
  value       = module.kcloud.price
}

output "price_per_hour" {
  description = "USD per hour (same as price)"
  value       = module.kcloud.price_per_hour
}

output "login_user" {
  value = module.kcloud.login_user
}

output "attempts" {
  value = module.kcloud.attempts
}

output "ssh_key_id" {
  value = module.kcloud.ssh_key_id
}

output "members" {
  description = "Every node: name, id, ip, private_ip, instance_type, region, boot_volume"
  value       = module.kcloud.members
}
