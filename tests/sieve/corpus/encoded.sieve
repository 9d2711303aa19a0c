require ["encoded-character", "fileinto"];
if header :contains "subject" "${hex:70 72 65}sent" { fileinto "${unicode:48}i"; }
