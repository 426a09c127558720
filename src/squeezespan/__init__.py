"""squeezespan."""
