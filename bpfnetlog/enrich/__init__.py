"""Host, NIC and Kubernetes metadata added to records."""
