"""Real services for tests: started on a free loopback port, stopped by PID."""
