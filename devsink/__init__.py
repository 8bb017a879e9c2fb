"""Development tools: a local SMTP sink whose messages show in the admin, and the run command."""
