"""Code that runs on the dev and prod hosts themselves (Python 3 stdlib, boto3 from Debian).

`apply` is copied verbatim onto each host by cloud-init and must therefore
import nothing from `infra`.
"""
