"""Supply chain: sign what passed ztml's gates, attest why, verify before anything runs.

- `keys`: ECDSA P-256 key references (PEM file, `env://VAR`, `awskms://...`) -> Signer/Verifier;
- `registry_client`: the OCI distribution API calls the cosign storage convention needs;
- `image_signatures`: cosign "simple signing" signatures at `sha256-<hex>.sig`;
- `attestations`: DSSE-wrapped in-toto statements at `sha256-<hex>.att`;
- `verification`: the checks a runtime makes before it starts an image.
"""
