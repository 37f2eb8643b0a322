"""Protected code (issue 20): enclaves whose code is encrypted at rest and decrypted in place
after launch, with the key released by the owner's launch enclave (``docs/pcl.md``).

* :mod:`sgxlaunch.pcl.crypto` — the public-key box, domain tags, key id, release constraint
  and the wrapped-key file;
* :mod:`sgxlaunch.pcl.ecalls` — the decryptor's ECALL contract.
"""
