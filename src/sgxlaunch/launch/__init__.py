"""Layer 7: the owner launch enclave, the launch log and the Platform that wires them."""
