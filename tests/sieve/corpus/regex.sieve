require ["regex", "variables", "fileinto"];
if header :regex "subject" "^I (have|had) a ([a-z]+) for" { fileinto "${2}s"; }
if address :regex :localpart "from" "^(a*)*b$" { discard; }
