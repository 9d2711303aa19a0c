require ["date", "relational", "fileinto"];
if date :zone "+0000" "date" "hour" "19" { fileinto "utc19"; }
if date :originalzone "date" "zone" "-0500" { fileinto "eastern"; }
if date :value "lt" :originalzone "date" "date" "2008-01-08" { fileinto "old"; }
if date :originalzone "date" "weekday" "1" { fileinto "monday"; }
if date :originalzone "date" "julian" "54472" { fileinto "mjd"; }
