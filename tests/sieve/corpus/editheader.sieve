require ["editheader", "imap4flags"];
deleteheader "X-Caffeine";
addheader :last "X-Filtered" "yes";
if not exists "X-Caffeine" { keep :flags "\\Seen"; }
