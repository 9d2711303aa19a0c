"""One module per Sieve extension; each exports `SIGNATURES`, the commands and tests it adds."""
