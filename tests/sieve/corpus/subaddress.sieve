require ["envelope", "subaddress", "fileinto", "variables"];
if envelope :detail :matches "to" "*" { fileinto "${1}"; }
if envelope :user "to" "ken" { addflag_never_here; }
