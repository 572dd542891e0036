# DataCrunch / Verda. Credentials: ~/.datacrunch/credentials or
# DATACRUNCH_CLIENT_ID + DATACRUNCH_CLIENT_SECRET (never here).
provider "kcloud" {
  cloud         = "datacrunch"
  journal_path  = var.journal_path
  progress_file = var.progress_file
}
