output "id" {
  value = kcloud_instance.this.id
}

output "name" {
  value = kcloud_instance.this.name
}

output "ip" {
  value = kcloud_instance.this.ip
}

output "instance_type" {
  value = kcloud_instance.this.instance_type
}

output "region" {
  value = kcloud_instance.this.region
}

output "price" {
  description = "USD per hour"
  value       = kcloud_instance.this.price_per_hour
}

output "price_per_hour" {
  description = "USD per hour (same as price)"
  value       = kcloud_instance.this.price_per_hour
}

output "login_user" {
  value = kcloud_instance.this.login_user
}

output "attempts" {
  description = "What create tried, in order: \"type region: outcome: reason\""
  value       = kcloud_instance.this.attempts
}

output "ssh_key_id" {
  value = kcloud_instance.this.ssh_key_id
}

output "members" {
  description = "Every node: name, id, ip, private_ip, instance_type, region, boot_volume"
  value       = kcloud_instance.this.members
}
