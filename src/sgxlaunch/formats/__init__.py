"""Layer 3: enclave images as bytes. Each format turns an image into measured operations."""
