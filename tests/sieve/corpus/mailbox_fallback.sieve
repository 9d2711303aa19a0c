require ["fileinto", "mailbox"];
if mailboxexists "Archive" { fileinto "Archive"; } else { fileinto "Missing"; }
fileinto "inbox";
