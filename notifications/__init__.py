"""Notification email through SMTP settings an administrator manages in the admin."""
