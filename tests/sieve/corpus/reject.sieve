require ["reject"];
if header :contains "subject" "present" { reject text:
I don't want your present.
..
.
; }
