require ["envelope", "subaddress", "fileinto", "variables", "mailbox", "copy"];
if envelope :detail :matches "to" "*" { fileinto :create "${1}"; }
if envelope :user :is "to" "ken" { redirect :copy "ken@example.net"; }
