# Lambda Cloud. Credentials: ~/.lambdalabs/credentials or LAMBDALABS_API_KEY (never here).
provider "kcloud" {
  cloud         = "lambdalabs"
  journal_path  = var.journal_path
  progress_file = var.progress_file
}
