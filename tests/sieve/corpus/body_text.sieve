require ["body", "fileinto"];
if body :text :contains "ANVIL" { fileinto "anvils"; }
if body :raw :contains "cliff." { discard; }
