"""Offline tools: simulator data, training, evaluation, reports and bags (never imports rclpy)."""
