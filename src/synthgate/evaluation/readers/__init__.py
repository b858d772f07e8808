"""Reader studies: can readers tell synthetic from real? (issue 19; dumontschutte2021 S.8)."""
