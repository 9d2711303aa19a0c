require ["imap4flags", "fileinto", "copy"];
if header :contains "from" "coyote" {
    setflag "\\Deleted";
    addflag ["\\Answered", "\\Flagged"];
    removeflag "\\Deleted";
    fileinto :copy "coyote";
}
if hasflag :contains "flagged" { addflag "$Important \\flagged"; }
